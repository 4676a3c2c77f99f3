"""Datasets for the course: captioned Shapes (offline, the default; ``shapes``), 2-D toy data (``toy``), captioned
(Fashion-)MNIST (``vision``), and your own captioned pictures, a folder with a captions.jsonl (``folder``)."""
