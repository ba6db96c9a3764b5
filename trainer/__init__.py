"""trainer: the paper's method (dataset -> search -> fit -> evaluate -> export) on engines/."""
