"""Google Landmark Recognition / Retrieval pipeline: TFRecords, EfficientNet-DOLG, kNN submissions.

Heavy modules (TensorFlow, Keras) are imported lazily by the submodules that need them, so
`import landmarks` and `python -m landmarks --help` stay fast.
"""

__version__ = "0.1.0"
