"""Python reference for the safetensors open benchmark (run by bench/safetensors-open.sh).

    python bench/safetensors_open.py make PATH       # writes a ~500 MB safetensors file
    python bench/safetensors_open.py time PATH N     # times N opens, prints one JSON line

"Open" is `safetensors.torch.load_file(PATH)`, the call Transformers uses: it maps the file and
returns a dict of tensors (in safetensors 0.8 the tensors are views of the mapped file, so the
time should not depend on the file size).
"""
import json
import statistics
import sys
import time


def make(path):
    import numpy as np
    from safetensors.numpy import save_file

    # 125 tensors of 1024 x 1024 f32 = 500 MiB, named like a model's layers.
    tensors = {
        f"model.layers.{i}.weight": np.full((1024, 1024), i, dtype=np.float32)
        for i in range(125)
    }
    save_file(tensors, path, metadata={"format": "pt"})


def time_opens(path, count):
    from safetensors.torch import load_file

    samples = []
    for _ in range(count):
        start = time.perf_counter()
        tensors = load_file(path)
        samples.append(time.perf_counter() - start)
        assert len(tensors) == 125
        del tensors
    print(json.dumps({
        "impl": "python safetensors.torch.load_file",
        "runs": count,
        "median_ms": statistics.median(samples) * 1e3,
        "min_ms": min(samples) * 1e3,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        time_opens(sys.argv[2], int(sys.argv[3]))
