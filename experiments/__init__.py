"""The scripts users launch (train.py, predict.py, ...); a package so that tests import them."""
