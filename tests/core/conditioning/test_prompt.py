import pytest
import torch
from torch import nn

from core.conditioning.prompt import InvariancePrompt


def loop_reference(prompt: InvariancePrompt, invariance: torch.Tensor) -> torch.Tensor:
    """The paper's definition: M separate Linear → ReLU → Linear projectors, outputs averaged."""
    tokens = []
    for m in range(prompt.num_projectors):
        fc1 = nn.Linear(prompt.num_factors, prompt.fc1_weight.shape[2], device=invariance.device)
        fc2 = nn.Linear(prompt.fc1_weight.shape[2], prompt.embed_dim, device=invariance.device)
        with torch.no_grad():
            fc1.weight.copy_(prompt.fc1_weight[m].T)
            fc1.bias.copy_(prompt.fc1_bias[m])
            fc2.weight.copy_(prompt.fc2_weight[m].T)
            fc2.bias.copy_(prompt.fc2_bias[m])
        tokens.append(fc2(torch.relu(fc1(invariance))))
    return torch.stack(tokens).mean(0)


@pytest.mark.parametrize("num_projectors, hidden_dim", [(1, None), (7, None), (16, 5)])
def test_batched_prompt_equals_loop_over_projectors(num_projectors: int, hidden_dim: int | None,
                                                    device: torch.device) -> None:
    torch.manual_seed(0)
    prompt = InvariancePrompt(num_factors=3, embed_dim=12, num_projectors=num_projectors, hidden_dim=hidden_dim)
    prompt = prompt.to(device)
    invariance = torch.rand(4, 3, device=device)
    torch.testing.assert_close(prompt(invariance), loop_reference(prompt, invariance), rtol=1e-5, atol=1e-6)
    single = prompt(invariance[1])
    assert single.shape == (1, 12)
    torch.testing.assert_close(single[0], prompt(invariance)[1])


def test_prompt_gradients_and_errors(device: torch.device) -> None:
    prompt = InvariancePrompt(num_factors=2, embed_dim=8, num_projectors=4).to(device)
    invariance = torch.tensor([0.5, 0.5], device=device, requires_grad=True)
    prompt(invariance).sum().backward()
    assert invariance.grad is not None and invariance.grad.abs().sum() > 0
    assert all(p.grad is not None for p in prompt.parameters())
    with pytest.raises(ValueError, match="shape"):
        prompt(torch.ones(3, device=device))
    with pytest.raises(ValueError, match="positive"):
        InvariancePrompt(num_factors=2, embed_dim=8, num_projectors=0)
