"""`python -m demo`: the scripted bank call of `make demo` (see `demo/bank_call.py`)."""

from demo.bank_call import main

main()
