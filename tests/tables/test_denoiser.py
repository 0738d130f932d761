"""tables/denoiser.py: the eps denoiser of a table, trained on the table itself."""
import numpy as np
import torch


def test_training_leaves_torch_global_rng_alone():
    from repaint_cli.tables.denoiser import train_table_model
    from repaint_cli.tables.model_config import TableModelConfig, TrainSettings

    torch.manual_seed(123)
    state = torch.get_rng_state()
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    a = train_table_model(x, np.ones_like(x, bool), TableModelConfig(width=8, blocks=1), TrainSettings(steps=3))
    assert torch.equal(torch.get_rng_state(), state)
    b = train_table_model(x, np.ones_like(x, bool), TableModelConfig(width=8, blocks=1), TrainSettings(steps=3))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
