"""Engines: map plain array functions over chunks (Dask) and tasks over workers (Ray).

Nothing here starts at import time; clusters start inside context managers.
"""
