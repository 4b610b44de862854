"""Pictures of any convolution, drawn from the index maps convjax computes with.

``animate`` builds the frames (plain records: no drawing library needed); ``Animation.save``
writes ``.gif``, ``.html`` or ``.png``, ``figure`` draws a static sheet, ``channels`` the channel
connectivity of grouped, depthwise and separable convolutions, ``local_kernels`` which kernel
each output of a locally connected layer uses, ``deform_sampling`` where a deformable
convolution samples for one output.  Drawing needs matplotlib and Pillow (in the
``viz`` extra: ``pip install -e ".[viz]"`` in a clone).
"""

from convjax._src.tools.viz import Animation, Step, animate, channels, connectivity, figure
from convjax._src.tools.viz_deform import deform_sampling
from convjax._src.tools.viz_local import local_kernels

__all__ = [
    "Animation",
    "Step",
    "animate",
    "channels",
    "connectivity",
    "deform_sampling",
    "figure",
    "local_kernels",
]
