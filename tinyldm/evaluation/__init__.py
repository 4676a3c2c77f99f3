"""How good is it: the Shapes judge, sample and reconstruction metrics, distances between point sets."""
