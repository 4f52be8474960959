"""Synthetic and real-footage development datasets with known answers (`videoseq generate`)."""
