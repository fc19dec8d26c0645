"""Experiment grids over model x method x task x p x n x seed, their result store and reports."""
