"""Pictures: image grids, chain strips, animations and schedule curves (``images``); the forward-process explorer
(``explorer``); 2-D point clouds (``plots2d``)."""
