"""Data: datasets as numbered samples, sample records read from sources, and the dataset manifest."""
