"""The GAN itself: G and D, training, checkpoints and the loaded model, BatchNorm statistics and the device.
Imports ``ganlab.data`` and below, never the plugin registry."""
