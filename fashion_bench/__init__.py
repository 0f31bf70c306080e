"""fashion-bench: train, evaluate and compare fashion multimodal retrieval methods on equal terms.

Importing the package is cheap: heavy libraries (torch, lightning, open_clip) load only in the modules
that need them, so that ``fashion-bench --help`` and the ``data`` / ``report`` subcommands stay fast.
Import ``fashion_bench`` before ``lightning`` or ``torchvision``: it installs the torchvision import guard
(see ``fashion_bench._env``).
"""

from fashion_bench._env import apply_offline_defaults, install_torchvision_guard

__version__ = "0.1.0"

apply_offline_defaults()
install_torchvision_guard()
