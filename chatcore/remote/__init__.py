"""A Space seen from elsewhere: the HTTP mirror of its log and the gradio_client wrapper."""
