"""The runtime's Segmenter and the training evaluation path agree bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamseg.device import select_device
from streamseg.frames import Frame
from streamseg.model import build_network, save_model
from streamseg.segmenter import Segmenter
from streamseg.transforms import network_input, resize, upload
from training.data import PolypDataset, PolypFolder, read_split
from training.evaluate import predict_image

KVASIR = Path(__file__).parent / "fixtures" / "kvasir"


def test_segmenter_equals_the_evaluation_path(tiny_spec, tmp_path):
    """Runtime (frame -> Segmenter) against training (dataset tensor -> network).

    The training side starts from :class:`PolypDataset`'s evaluation tensor
    and calls the network directly, not the runtime's inference function, so
    a difference in decoding, upload, resizing, normalization or the sigmoid
    on either side fails the comparison.
    """
    torch.manual_seed(0)
    path = save_model(tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec)
    device = select_device("cpu")
    segmenter = Segmenter.from_file(path, device)
    folder = PolypFolder.open(KVASIR)
    stems = read_split(KVASIR / "splits" / "test.txt")
    dataset = PolypDataset(folder, stems, tiny_spec.input_hw)
    for index, stem in enumerate(stems):
        pixels = folder.load_image(stem)
        runtime = segmenter(Frame(0, 0.0, pixels)).probabilities
        image, _ = dataset[index]
        with torch.inference_mode():
            logits = segmenter.network(image[None].to(device))
        training = logits.float().sigmoid()[0, 0]
        # The runtime keeps the map at the network's input size.
        assert runtime.shape == tuple(tiny_spec.input_hw)
        assert torch.equal(runtime, training)
        # The training evaluation command's own path: the same map, resized back.
        assert torch.equal(
            resize(runtime[None, None], pixels.shape[:2])[0, 0],
            predict_image(segmenter.network, pixels, tiny_spec.input_hw, device),
        )


def test_a_batch_of_frames_equals_each_frame_alone(tiny_spec, tmp_path):
    """Files run in batches: each frame's map equals that of the stacked batch
    through the network and, within rounding, that of the frame alone."""
    torch.manual_seed(0)
    path = save_model(tmp_path / "m.safetensors", build_network(tiny_spec), tiny_spec)
    segmenter = Segmenter.from_file(path, select_device("cpu"))
    folder = PolypFolder.open(KVASIR)
    image = folder.load_image(read_split(KVASIR / "splits" / "test.txt")[0])
    frames = [
        Frame(i, i / 25, np.ascontiguousarray(pixels))
        for i, pixels in enumerate((image, image[::-1], image[:, ::-1]))
    ]
    batched = [p.probabilities for p in segmenter.segment(frames)]
    alone = [segmenter(frame).probabilities for frame in frames]
    stacked = segmenter.probabilities(upload(np.stack([f.pixels for f in frames])))
    for index in range(len(frames)):
        # The same network batch: bit for bit; batch 3 against batch 1 may
        # round differently inside the network's kernels.
        assert torch.equal(batched[index], stacked[index])
        torch.testing.assert_close(batched[index], alone[index], atol=1e-5, rtol=0)


def test_validation_batches_are_what_the_runtime_feeds_the_network(tiny_spec):
    folder = PolypFolder.open(KVASIR)
    stem = folder.paired_stems[0]
    image, _ = PolypDataset(folder, [stem], tiny_spec.input_hw)[0]
    runtime_input = network_input(upload(folder.load_image(stem)), tiny_spec.input_hw)
    assert torch.equal(image[None], runtime_input)
