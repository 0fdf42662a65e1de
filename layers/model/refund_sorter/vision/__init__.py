"""Photo bytes → departments: decode (:mod:`.images`), the ONNX model (:mod:`.classifier`), ImageNet class →
department (:mod:`.taxonomy`), and the :class:`~.sorter.Sorter` that runs them over many photos at once."""
