"""qarr quantize: quantized checkpoints vLLM loads, made with llm-compressor in its own environment."""
