"""The networks: frame transforms, encoders, the motion stream, temporal heads, the classifier, bundles."""
