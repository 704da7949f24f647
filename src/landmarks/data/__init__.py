"""Data: the GLDv2 layout, TFRecords, the tf.data input pipeline, and the mini-landmarks demo set
(`landmarks.data.demo.build_demo_data`)."""
