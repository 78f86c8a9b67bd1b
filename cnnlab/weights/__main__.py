"""`python -m cnnlab.weights RUN_OR_CHECKPOINT NAME`: export built-in weights, print their hash."""

import hashlib
import sys

from cnnlab.weights import export_weights

if len(sys.argv) != 3:
    sys.exit("usage: python -m cnnlab.weights RUN_OR_CHECKPOINT NAME (e.g. lenet5_modern.mnist)")
written = export_weights(sys.argv[1], sys.argv[2])
print(written, hashlib.sha256(written.read_bytes()).hexdigest())
