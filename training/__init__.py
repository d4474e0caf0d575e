"""Training stage: ``training.train.train(cfg, run_dir, evaluate_checkpoint=None)`` trains one
grid point with open_clip's recipe. One module per component: ``step`` (optimizer, loss, one
optimizer step), ``data`` (the webdataset stream), ``distributed`` (processes), ``stop``
(preemption signals), ``state`` (the run's state and resume), ``checkpoint`` (the file format),
``metrics`` (the training log), ``loop`` (the steps), ``models`` (model construction). The
package itself imports nothing heavy, so light modules stay cheap to import on a login node.
"""
