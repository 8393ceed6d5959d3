"""Device tier: small sequential recommenders (SRMs) that rerank on the device.

It imports only :mod:`tandem`; it never imports cloud code.
"""
