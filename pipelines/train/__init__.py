"""The train stage: fine-tuning, logging and registering the model, and the ONNX export served with it."""
