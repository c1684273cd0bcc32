"""hftraining: transformer forecasters for OHLCV market data, evaluated against naive baselines."""

__version__ = "0.1.0"
