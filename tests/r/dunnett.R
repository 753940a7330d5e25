# Dunnett's single-step adjustment by multcomp on given estimates, covariance and df (multcomp::parm).
# Usage: Rscript dunnett.R IN.csv OUT.csv ; IN has estimate, df, q (our simultaneous critical value) and the
# covariance in columns v1..vk. OUT: multcomp's adjusted p-values, and mvtnorm's coverage of [-q, q]^k.
suppressMessages({library(multcomp); library(mvtnorm)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
k <- nrow(d)
V <- as.matrix(d[, paste0("v", seq_len(k))])
est <- setNames(d$estimate, paste0("t", seq_len(k)))
dimnames(V) <- list(names(est), names(est))
g <- glht(parm(est, V, df = d$df[1]), linfct = diag(k))
alg <- GenzBretz(maxpts = 2e6, abseps = 1e-9, releps = 0)
set.seed(1)
p <- summary(g, test = adjusted("single-step", algorithm = alg))$test$pvalues
set.seed(1)
coverage <- pmvt(lower = rep(-d$q[1], k), upper = rep(d$q[1], k), corr = cov2cor(V), df = d$df[1], algorithm = alg)
write.csv(data.frame(p = as.numeric(p), coverage = as.numeric(coverage)), args[2], row.names = FALSE)
