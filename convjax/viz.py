"""Pictures of any convolution, drawn from the index maps convjax computes with.

``animate`` builds the frames (plain records: no drawing library needed); ``Animation.save``
writes ``.gif``, ``.html`` or ``.png``, ``figure`` draws a static sheet and ``channels`` the
channel connectivity of grouped, depthwise and separable convolutions.  Drawing needs matplotlib
and Pillow: ``pip install "convjax[viz]"``.
"""

from convjax._src.tools.viz import Animation, Step, animate, channels, connectivity, figure

__all__ = ["Animation", "Step", "animate", "channels", "connectivity", "figure"]
