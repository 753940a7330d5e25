# The reference for skintrack's MMRM covariance structures and their inference.
# Usage: Rscript structures.R DATA.csv STRUCTURE OUT_PREFIX
#   DATA.csv: subject, arm, visit, base, chg, day; DATA.csv.arms and DATA.csv.visits hold the levels in order
#   (the first arm is the control); DATA.csv.contrasts: one contrast per row over R's coefficient names.
# Writes OUT_PREFIX-coef.csv (REML estimates), -vcov.csv (model-based (X'V^-1X)^-1), and
#   -kr.csv    Kenward-Roger: the adjusted covariance and df of each contrast, computed here from the paper
#              (Kenward & Roger 1997, Biometrics 53:983-997: eq. 2 Phi, the P, Q, R matrices below eq. 2, W the
#              inverse expected information of eq. 4, Phi_A of eq. 5, and the approximation of section 4 for
#              one contrast, m = 2 / A2), with the structure's natural parameters;
#   -cr2.csv   clubSandwich's CR2 sandwich and its Satterthwaite df for each contrast (fallback structures);
#   -lmer.csv  (structure "cs" only) lmerTest/pbkrtest Kenward-Roger on the same model as a random intercept.
suppressMessages({library(nlme)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
structure <- args[2]
out <- args[3]
arms <- readLines(paste0(args[1], ".arms"))
visits <- readLines(paste0(args[1], ".visits"))
L <- as.matrix(read.csv(paste0(args[1], ".contrasts"), check.names = FALSE))
d$arm <- factor(d$arm, levels = arms)
d$visit <- factor(d$visit, levels = visits)
d$vis <- as.integer(d$visit)
d <- d[order(d$subject, d$vis), ]
nv <- length(visits)
form <- chg ~ base + arm * visit
ctl <- glsControl(opt = "optim", optimMethod = "BFGS", msTol = 1e-15, tolerance = 1e-12, msMaxIter = 10000,
                  maxIter = 1000)
het <- varIdent(form = ~ 1 | visit)
cor <- switch(structure,
  unstructured = corSymm(form = ~ vis | subject), ar1_h = corAR1(form = ~ vis | subject),
  ar1 = corAR1(form = ~ vis | subject), cs_h = corCompSymm(form = ~ 1 | subject),
  cs = corCompSymm(form = ~ 1 | subject), spatial_power = corExp(form = ~ day | subject),
  # a stationary AR(T - 1) spans every positive definite Toeplitz correlation of T visits (Durbin-Levinson)
  toeplitz = , toeplitz_h = corARMA(form = ~ vis | subject, p = nv - 1, q = 0))
weights <- if (structure %in% c("ar1", "cs", "toeplitz")) NULL else het
# The optimum to 1e-8: nlminb first, then BFGS from there (BFGS from nlme's own start can fail to invert
# corAR1's coefficient matrix; nlminb alone stops ~1e-5 short on some of these likelihoods).
first <- gls(form, data = d, correlation = cor, weights = weights, method = "REML",
             control = glsControl(msTol = 1e-14, tolerance = 1e-12, msMaxIter = 10000, maxIter = 1000,
                                  returnObject = TRUE))
fit <- tryCatch(gls(form, data = d, correlation = first$modelStruct$corStruct, weights = first$modelStruct$varStruct,
                    method = "REML", control = ctl), error = function(e) first)
if (logLik(fit) < logLik(first)) fit <- first
X <- model.matrix(form, d)
L <- L[, colnames(X), drop = FALSE]
write.csv(data.frame(term = names(coef(fit)), estimate = coef(fit)), paste0(out, "-coef.csv"), row.names = FALSE)
write.csv(fit$varBeta, paste0(out, "-vcov.csv"))

# ---- the fitted covariance of each subject, and its derivatives in the natural parameters ----------------
rows <- split(seq_len(nrow(d)), d$subject)
blocks <- lapply(names(rows), function(s) {
  v <- getVarCov(fit, individual = s, type = "marginal")
  as.matrix(if (is.list(v)) v[[1]] else v)
})
vars <- sapply(seq_len(nv), function(j) {  # the variance of each visit, from any subject seen then
  for (k in seq_along(rows)) {
    hit <- which(d$vis[rows[[k]]] == j)
    if (length(hit) && ncol(blocks[[k]]) == length(rows[[k]])) return(blocks[[k]][hit, hit])
  }
})
vars <- unlist(vars)
for (k in seq_along(rows)) if (ncol(blocks[[k]]) != length(rows[[k]]))  # nlme gives corExp's one-visit subjects no matrix
  blocks[[k]] <- matrix(vars[d$vis[rows[[k]]]], 1, 1)
sds <- sqrt(vars)
toeplitz <- structure %in% c("toeplitz", "toeplitz_h")
rho <- if (structure %in% c("unstructured", "cs")) NA else {
  cf <- coef(fit$modelStruct$corStruct, unconstrained = FALSE)
  if (toeplitz) ARMAacf(ar = cf, lag.max = nv - 1)[-1]  # the correlation at each lag 1 .. T - 1
  else if (structure == "spatial_power") exp(-1 / cf[["range"]]) else as.numeric(cf[1])
}
lags <- function(idx, days) if (structure == "spatial_power") abs(outer(days, days, "-")) else abs(outer(idx, idx, "-"))
corr <- function(lag) switch(structure, cs_h = ifelse(lag == 0, 1, rho),
                             toeplitz_h = , toeplitz = array(c(1, rho)[lag + 1], dim(lag)), rho^lag)
# the correlation's derivatives in its parameters (Toeplitz: one per lag, linear), and the second ones
dcorrs <- function(lag) if (toeplitz) lapply(seq_len(nv - 1), function(k) 1 * (lag == k)) else
  list(if (structure == "cs_h") ifelse(lag == 0, 0, 1) else ifelse(lag > 0, lag * rho^(lag - 1), 0))
d2corr <- function(lag) if (structure %in% c("cs_h", "toeplitz_h")) 0 * lag else
  ifelse(lag > 0 & lag != 1, lag * (lag - 1) * rho^(lag - 2), 0)
hits <- function(idx) lapply(1:nv, function(j) outer(idx == j, rep(TRUE, length(idx))) + outer(rep(TRUE, length(idx)), idx == j))
derivs <- function(idx, days) {
  # dS / dparameter for one subject, in the structure's natural parameters
  m <- length(idx)
  if (structure == "unstructured") {
    pairs <- which(lower.tri(diag(nv), diag = TRUE), arr.ind = TRUE)
    pairs <- pairs[order(pairs[, 1], pairs[, 2]), , drop = FALSE]  # numpy's tril_indices order
    return(lapply(seq_len(nrow(pairs)), function(k) {
      E <- matrix(0, m, m); a <- which(idx == pairs[k, 1]); b <- which(idx == pairs[k, 2])
      if (length(a) && length(b)) { E[a, b] <- 1; E[b, a] <- 1 }; E }))
  }
  if (structure == "cs") return(list(matrix(1, m, m), diag(m)))
  lag <- lags(idx, days)
  if (structure == "toeplitz") return(lapply(0:(nv - 1), function(k) 1 * (lag == k)))  # the covariance at each lag
  if (structure == "ar1") return(list(corr(lag), vars[1] * dcorrs(lag)[[1]]))
  s <- outer(sds[idx], sds[idx]); h <- hits(idx)
  c(lapply(1:nv, function(j) s * h[[j]] / (2 * vars[j]) * corr(lag)), lapply(dcorrs(lag), function(dc) s * dc))
}
second <- function(idx, days) {
  # d2S / dparameter^2 (a list of lists; zero for the linear structures)
  m <- length(idx); K <- length(derivs(idx, days)); Z <- matrix(0, m, m)
  out <- lapply(1:K, function(i) lapply(1:K, function(j) Z))
  if (structure %in% c("unstructured", "cs", "toeplitz")) return(out)
  lag <- lags(idx, days)
  if (structure == "ar1") {
    out[[1]][[2]] <- out[[2]][[1]] <- dcorrs(lag)[[1]]; out[[2]][[2]] <- vars[1] * d2corr(lag); return(out)
  }
  s <- outer(sds[idx], sds[idx]); h <- hits(idx)
  for (j in 1:nv) for (k in 1:nv) {
    out[[j]][[k]] <- s * h[[j]] * h[[k]] / (4 * vars[j] * vars[k]) * corr(lag)
    if (j == k) out[[j]][[k]] <- out[[j]][[k]] - s * h[[j]] / (2 * vars[j]^2) * corr(lag)
  }
  dc <- dcorrs(lag)
  for (j in 1:nv) for (k in seq_along(dc))
    out[[j]][[nv + k]] <- out[[nv + k]][[j]] <- s * h[[j]] / (2 * vars[j]) * dc[[k]]
  if (length(dc) == 1) out[[nv + 1]][[nv + 1]] <- s * d2corr(lag)  # Toeplitz's correlations enter linearly
  out
}

# ---- Kenward-Roger from the paper --------------------------------------------------------------------------------
Phi <- fit$varBeta
Vi <- lapply(blocks, solve)
K <- length(derivs(d$vis[rows[[1]]], d$day[rows[[1]]]))
P <- lapply(1:K, function(k) 0); Q <- lapply(1:K, function(k) lapply(1:K, function(l) 0))
R <- Q; Ktr <- matrix(0, K, K)
for (s in seq_along(rows)) {
  r <- rows[[s]]; idx <- d$vis[r]; Xs <- X[r, , drop = FALSE]
  dS <- derivs(idx, d$day[r]); d2S <- second(idx, d$day[r])
  for (k in 1:K) {
    P[[k]] <- P[[k]] - t(Xs) %*% Vi[[s]] %*% dS[[k]] %*% Vi[[s]] %*% Xs
    for (l in 1:K) {
      Q[[k]][[l]] <- Q[[k]][[l]] + t(Xs) %*% Vi[[s]] %*% dS[[k]] %*% Vi[[s]] %*% dS[[l]] %*% Vi[[s]] %*% Xs
      R[[k]][[l]] <- R[[k]][[l]] + t(Xs) %*% Vi[[s]] %*% d2S[[k]][[l]] %*% Vi[[s]] %*% Xs
      Ktr[k, l] <- Ktr[k, l] + sum(diag(Vi[[s]] %*% dS[[k]] %*% Vi[[s]] %*% dS[[l]]))
    }
  }
}
IE <- matrix(0, K, K)
for (k in 1:K) for (l in 1:K)
  IE[k, l] <- 0.5 * (Ktr[k, l] - 2 * sum(diag(Phi %*% Q[[k]][[l]])) + sum(diag(Phi %*% P[[k]] %*% Phi %*% P[[l]])))
W <- solve(IE)
U <- 0
for (k in 1:K) for (l in 1:K) U <- U + W[k, l] * (Q[[k]][[l]] - P[[k]] %*% Phi %*% P[[l]] - R[[k]][[l]] / 4)
PhiA <- Phi + 2 * Phi %*% U %*% Phi
kr <- t(apply(L, 1, function(c) {
  theta <- c %*% t(c) / as.numeric(t(c) %*% Phi %*% c)
  A2 <- 0
  for (k in 1:K) for (l in 1:K)
    A2 <- A2 + W[k, l] * sum(diag(theta %*% Phi %*% P[[k]] %*% Phi %*% theta %*% Phi %*% P[[l]] %*% Phi))
  c(estimate = sum(c * coef(fit)), se = sqrt(as.numeric(t(c) %*% PhiA %*% c)), df = 2 / A2)
}))
write.csv(kr, paste0(out, "-kr.csv"), row.names = FALSE)

# ---- CR2 (clubSandwich) -----------------------------------------------------------------------------------------
if (structure != "unstructured" && requireNamespace("clubSandwich", quietly = TRUE)) {
  suppressMessages(library(clubSandwich))
  lc <- tryCatch(linear_contrast(fit, vcov = vcovCR(fit, type = "CR2"), contrasts = L, test = "Satterthwaite"),
                 error = function(e) NULL)  # clubSandwich cannot take corExp's one-visit subjects
  if (!is.null(lc))
    write.csv(data.frame(estimate = lc$Est, se = lc$SE, df = lc$df), paste0(out, "-cr2.csv"), row.names = FALSE)
}

# ---- compound symmetry as a random intercept: pbkrtest / lmerTest --------------------------------------------
if (structure == "cs") {
  suppressMessages({library(lmerTest); library(pbkrtest)})
  m <- lmer(chg ~ base + arm * visit + (1 | subject), data = d, REML = TRUE,
            control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.2, rhoend = 1e-12)))
  Vadj <- vcovAdj(m)
  res <- t(apply(L, 1, function(c) {
    ct <- contest(m, matrix(c, nrow = 1), ddf = "Kenward-Roger", joint = FALSE)
    c(estimate = ct$Estimate, se = ct$`Std. Error`, df = ct$df, se_pbkrtest = sqrt(as.numeric(t(c) %*% as.matrix(Vadj) %*% c)),
      df_pbkrtest = Lb_ddf(matrix(c, nrow = 1), vcov(m), Vadj))
  }))
  write.csv(res, paste0(out, "-lmer.csv"), row.names = FALSE)
}
