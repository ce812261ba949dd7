"""MoAI's model: Compressor, Mixer experts and gates, connector, around a frozen CLIP and causal LM."""
from trainer.model.config import MoAIConfig
from trainer.model.inject import GateWeights
from trainer.model.moai import MoAIModel, MoAIOutput

__all__ = ["GateWeights", "MoAIConfig", "MoAIModel", "MoAIOutput"]
