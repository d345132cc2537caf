"""webllama.web: the browser runtime (ES modules under engine/), the pages (static/) and the Flask server."""
