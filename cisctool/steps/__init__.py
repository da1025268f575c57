"""The pipeline's steps (train, index, rectify, tune, rounds, compare, evaluate, predict, export, report): each
reads a Config, does its work and returns what it made; callable without Click."""
