"""The default pack's chain (`recipes/deepfake_classifier.toml`): real faces of the shared media, self-blends and
capture simulation, broadcast variants of real clips, validation on held-out real fakes (faces as served and clips
through the service), and the INT8 calibration and accuracy check of the served artifacts."""
