"""Behind the operator dashboard: the launcher, the login check and view helpers (no streamlit here)."""
