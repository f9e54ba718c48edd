#!/usr/bin/env bash
# braindecode for benchmarks/peers_eegmmi.py, installed into a folder of its own ($1, default
# .peers) beside the environment that runs neurofm, without touching that environment:
#
#   bash benchmarks/peers_env.sh .peers
#   PYTHONPATH=.peers python benchmarks/peers_eegmmi.py
#
# braindecode imports torchaudio when it loads. Where the installed torch has a matching
# torchaudio build, `pip install braindecode` is all it takes; where it has none (a torch newer
# than the newest torchaudio), torchaudio's compiled library does not load. torchaudio's loader
# treats a missing library as "run without the extension", so this script installs the newest
# torchaudio without it. None of the six models the benchmark trains calls torchaudio.
set -euo pipefail
target="${1:-.peers}"
python="${PYTHON:-python}"
"$python" -m pip install --quiet --no-deps --target "$target" \
    braindecode==1.8.1 torchaudio==2.11.0 skorch torchinfo wfdb linear_attention_transformer \
    docstring_inheritance h5py tabulate soundfile axial-positional-embedding linformer local-attention \
    product-key-memory hyper-connections colt5-attention
if ! "$python" -c "import sys; sys.path.insert(0, '$target'); import torchaudio" 2>/dev/null; then
    echo "torchaudio's compiled library does not load with this torch: running torchaudio without it"
    rm -f "$target"/torchaudio/lib/*.so
fi
PYTHONPATH="$target" "$python" -c "import braindecode.models as m; print('braindecode', m.__name__, 'ready')"
