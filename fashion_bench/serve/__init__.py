"""``fashion-bench serve``: a small web app (JSON API + one static page) over a search index."""
