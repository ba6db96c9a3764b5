"""The detector's chain (`dfwatch-train detector`, `recipes/face_detector.toml`): its dataset (WIDER FACE plus
MTCNN-labelled real frames), training with ultralytics, and the evaluation that picks the served input size."""
