"""The node agent's GPU side: NVML in (`source`), GPUHealthy out (`agent`), a fake for tests (`fake`).

Entry point for the runtime: `healer.gpu.agent.run_gpu_agent`.
"""
