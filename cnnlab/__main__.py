"""`python -m cnnlab` runs the command line (this is also what torchrun launches)."""

from cnnlab.cli import app

if __name__ == "__main__":
    app(prog_name="cnnlab")
