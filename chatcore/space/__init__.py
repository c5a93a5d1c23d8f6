"""The Space: the Gradio chat app, its front door, staff hand-off and its routes."""
