"""Measuring images and features: D's pooled features, exact nearest neighbours, row blocks of large arrays."""
