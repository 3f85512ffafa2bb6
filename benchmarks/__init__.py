"""What `make bench` measures: migrations, the served blog under load, and server migrations."""
