"""Adapters that retrofit <SEG>-token segmentation models with SasP (installed as sasp.adapters)."""
