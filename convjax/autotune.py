"""``impl="autotune"``: each convolution's formulation chosen by timing them on this machine,
cached in memory and on disk (``CONVJAX_CACHE_DIR``); ``enable()`` makes ``impl="auto"``
autotune too, and ``summary()`` says what was chosen.

>>> import convjax
>>> convjax.autotune.cache_dir().name
'autotune'
"""

from convjax._src.formulations.autotune import cache_dir, enable, enabled, summary

__all__ = ["cache_dir", "enable", "enabled", "summary"]
