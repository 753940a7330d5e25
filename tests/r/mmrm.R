# The reference for skintrack's MMRM: nlme::gls with unstructured covariance (corSymm + varIdent), REML,
# and emmeans LS-means by arm and visit; treatment-minus-control differences.
# Usage: Rscript mmrm.R DATA.csv LSMEANS.csv DIFFS.csv BASE_BY_VISIT(yes/no)
# DATA has subject, arm, visit, base, chg; arm and visit levels in order are in DATA.arms and DATA.visits
# (one per line), the first arm being the control.
#
# Degrees of freedom: emmeans' mode = "satterthwaite" cannot differentiate this model's apVar (nlme keeps it
# in the "natural" parameters and crashes with natural = FALSE), so it falls back to "appx-satterthwaite",
# whose refitted numerical gradients scatter by 1-3%. The reference df (column df_ref) is therefore computed
# here from the same definition: base R's optimHess of the REML likelihood at nlme's optimum, and central
# differences of (X'V^-1 X)^-1, for emmeans' own contrast vectors. emmeans' df are kept as df_emmeans.
suppressMessages({library(nlme); library(emmeans)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
arms <- readLines(paste0(args[1], ".arms"))
visits <- readLines(paste0(args[1], ".visits"))
d$arm <- factor(d$arm, levels = arms)
d$visit <- factor(d$visit, levels = visits)
d$vis <- as.integer(d$visit)
d <- d[order(d$subject, d$vis), ]
nv <- length(visits)
form <- if (nv == 1) chg ~ base + arm else if (args[4] == "yes") chg ~ base * visit + arm * visit else
  chg ~ base + arm * visit
# The optimum to machine precision: nlminb stops at a relative change of 1e-10 in the likelihood, which
# moves the LS-means by ~1e-5 relative.
ctl <- glsControl(opt = "optim", optimMethod = "BFGS", msTol = 1e-15, tolerance = 1e-12, msMaxIter = 10000,
                  maxIter = 1000)
fit <- if (nv > 1) gls(form, data = d, correlation = corSymm(form = ~ vis | subject),
                       weights = varIdent(form = ~ 1 | visit), method = "REML", control = ctl) else
  gls(form, data = d, method = "REML", control = ctl)
em <- if (nv > 1) suppressMessages(emmeans(fit, ~ arm | visit, mode = "satterthwaite", data = d)) else
  emmeans(fit, ~ arm, data = d)
ct <- contrast(em, "trt.vs.ctrl", ref = 1, adjust = "none")

# Sigma at nlme's optimum, from a subject seen at every visit
full <- names(which(table(d$subject) == nv))[1]
S_hat <- if (nv > 1) as.matrix(getVarCov(fit, individual = full)) else matrix(fit$sigma^2)
X <- model.matrix(form, d)
y <- d$chg
rows <- split(seq_len(nrow(d)), d$subject)
unpack <- function(theta) {
  L <- matrix(0, nv, nv); L[lower.tri(L, diag = TRUE)] <- theta; diag(L) <- exp(diag(L)); L %*% t(L)
}
parts <- function(theta) {
  S <- unpack(theta); M <- 0; b <- 0; yy <- 0; ld <- 0
  for (r in rows) {
    idx <- d$vis[r]; Si <- solve(S[idx, idx, drop = FALSE]); Xs <- X[r, , drop = FALSE]
    ld <- ld + as.numeric(determinant(S[idx, idx, drop = FALSE])$modulus)
    M <- M + t(Xs) %*% Si %*% Xs; b <- b + t(Xs) %*% Si %*% y[r]; yy <- yy + as.numeric(t(y[r]) %*% Si %*% y[r])
  }
  list(M = M, b = b, yy = yy, ld = ld)
}
reml2 <- function(theta) {
  p <- parts(theta); beta <- solve(p$M, p$b)
  p$ld + as.numeric(determinant(p$M)$modulus) + p$yy - as.numeric(t(p$b) %*% beta)
}
L0 <- t(chol(S_hat)); diag(L0) <- log(diag(L0)); theta <- L0[lower.tri(L0, diag = TRUE)]
A <- 2 * solve(optimHess(theta, reml2))
Phi <- solve(parts(theta)$M)
G <- lapply(seq_along(theta), function(k) {
  e <- rep(0, length(theta)); e[k] <- 1e-5
  (solve(parts(theta + e)$M) - solve(parts(theta - e)$M)) / 2e-5
})
df_ref <- function(linfct) apply(linfct, 1, function(k) {
  g <- sapply(G, function(Gk) as.numeric(t(k) %*% Gk %*% k))
  2 * as.numeric(t(k) %*% Phi %*% k)^2 / as.numeric(t(g) %*% A %*% g)
})
ls <- as.data.frame(summary(em))
ls$df_emmeans <- ls$df
ls$df_ref <- df_ref(em@linfct)
if (!"visit" %in% names(ls)) ls$visit <- visits[1]
write.csv(ls, args[2], row.names = FALSE)
cs <- as.data.frame(summary(ct, infer = TRUE))
cs$df_emmeans <- cs$df
cs$df_ref <- df_ref(ct@linfct)
if (!"visit" %in% names(cs)) cs$visit <- visits[1]
write.csv(cs, args[3], row.names = FALSE)
