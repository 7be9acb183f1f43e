"""The Gradio UI of TinyThinker Studio: one module per tab, each a thin layer over `tinythinker/`."""
