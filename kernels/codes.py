"""The integer codes and array indices the engine compiles in (kernels._engine).

Plain Python, no numba: the names of a run spec (kernels.names) and its validation map onto
these without loading the engine. The engine's cache key covers this file too
(kernels.cachepaths), so changing a code here recompiles the kernels.
"""

# Activation codes.
LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = 0, 1, 2, 3, 4, 5
# Loss codes.
MSE, CROSS_ENTROPY = 0, 1
# Accuracy modes.
ACC_NONE, ACC_ARGMAX, ACC_THRESHOLD = 0, 1, 2
# Indices into ``consts`` (an array of the network's dtype). After C_SCRATCH: the optimizer's
# scalars, cast to the dtype once per epoch (C_MU .. C_EPS, C_DECAY) or per batch (the rest).
C_LR, C_SLOPE, C_ONE, C_ZERO, C_HALF, C_SCRATCH = 0, 1, 2, 3, 4, 5
C_MU, C_W1, C_W1C, C_BETA2, C_W2, C_EPS, C_DECAY, C_STEP, C_BC2S, C_SHRINK = range(6, 16)
C_TINY = 16  # the dtype's smallest normal number
N_CONSTS = 17
# Optimizer codes.
OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM, OPT_ADAMW = 0, 1, 2, 3, 4
# Plateau metrics.
PLATEAU_OFF, PLATEAU_ERROR, PLATEAU_VAL_ERROR = 0, 1, 2
# Indices into ``ctl`` (int64: settings, then state that persists across chunks). I_GENERAL:
# the batch computes its gradients, then clips, decays and steps (else sgd's fused update).
I_OPT, I_GENERAL, I_METRIC, I_PATIENCE, I_RESTORE = 0, 1, 2, 3, 4
I_T, I_BEST_EPOCH, I_BAD, I_CHECKED, I_STATUS = 5, 6, 7, 8, 9
I_EVERY = 10  # eval_every: the whole-set evaluation runs at its multiples and the last epoch
I_SHARES_ROWS = 11  # knobs.SHARES_MAX_ROWS: parts of at most this many rows (see the engine)
N_CTL = 12
# Indices into ``hyper`` (float64: settings, then the plateau's best value).
H_MOMENTUM, H_BETA1, H_BETA2, H_EPS, H_DECAY, H_CLIP, H_MIN_DELTA, H_BEST = range(8)
N_HYPER = 8
# ctl[I_STATUS] after train_epochs: why the chunk ended.
RAN, DIVERGED, PLATEAU = 0, 1, 2
