"""(placeholder: `cnnlab models` and `cnnlab summary` are being written)"""
