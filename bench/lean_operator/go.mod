module finetune-operator/bench/lean_operator

go 1.22
