"""Regenerate the README's pictures: ``python docs/animations.py`` (needs ``convjax[viz]``).

Each is drawn at its default size, the size it is meant to be read at."""

import pathlib

from convjax import viz

HERE = pathlib.Path(__file__).parent / "img"

ANIMATIONS = {
    # The classic example: 5x5 input, 3x3 kernel, stride 2, padding 1, with the numbers.
    "conv_5x5_k3_s2_p1.gif": dict(
        input_shape=(5, 5, 1), kernel_shape=(3, 3, 1, 1), strides=2, padding=1, values=True
    ),
    # Dilated (atrous): a 3x3 kernel at rate 2 sees 5x5.
    "dilated_7x7_k3_d2.gif": dict(input_shape=(7, 7, 1), kernel_shape=(3, 3, 1, 1), dilation=2),
    # Transposed: the classic 2x2 back to 5x5, as the scatter of each input cell ...
    "transposed_2x2_k3_s2_scatter.gif": dict(
        input_shape=(2, 2, 1), kernel_shape=(3, 3, 1, 1), strides=2, transpose=True, values=True
    ),
    # ... and as a stride-1 convolution over the zero-inserted, padded input.
    "transposed_2x2_k3_s2_conv.gif": dict(
        input_shape=(2, 2, 1),
        kernel_shape=(3, 3, 1, 1),
        strides=2,
        transpose=True,
        view="conv",
        values=True,
    ),
    # Circular padding: the padding cells name the input cell they wrap around to.
    "circular_4x4_k3_same.gif": dict(
        input_shape=(4, 4, 1), kernel_shape=(3, 3, 1, 1), padding="SAME", padding_mode="circular"
    ),
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, options in ANIMATIONS.items():
        path = viz.animate(**options).save(HERE / name, fps=1.5)
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    channels = viz.channels(8, 8, 12, groups=(8, 1), labels=("depthwise", "pointwise"))
    channels.savefig(HERE / "depthwise_separable_channels.png")
    print(f"wrote {HERE / 'depthwise_separable_channels.png'}")


if __name__ == "__main__":
    main()
