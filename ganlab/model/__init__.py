"""The GAN itself: G and D (``networks``), training (``training``), checkpoints and the loaded model
(``checkpoint``, ``loaded_gan``, ``pytorch_examples``), BatchNorm statistics (``batchnorm``) and the device
(``devices``). Imports ``ganlab.data`` and below, never the plugin registry."""
