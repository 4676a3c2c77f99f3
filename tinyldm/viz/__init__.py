"""Pictures: image grids, chain strips, animations and widgets (``images``); 2-D point clouds (``plots2d``)."""
