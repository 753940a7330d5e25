# Reference for skintrack.analysis.raters: ICC(2,1) from psych::ICC (ANOVA mean squares, lmer = FALSE),
# weighted kappa from psych::cohen.kappa (quadratic weights over the given levels), and its large-sample
# variance written out from Fleiss, Cohen & Everitt (1969), Psychological Bulletin 72(5):323-327, eq. (13):
#   var(kw) = [sum_ij p_ij (w_ij (1 - pc) - (wbar_i. + wbar_.j)(1 - po))^2 - (po pc - 2 pc + po)^2] / (n (1 - pc)^4)
# with wbar_i. = sum_j p_.j w_ij and wbar_.j = sum_i p_i. w_ij (psych's own variance takes wbar_.j from the
# wrong margin, so it is not the reference for the interval).
# Usage: Rscript raters.R ratings.csv levels out.csv   (ratings.csv: one column per rater, complete rows)
args <- commandArgs(trailingOnly = TRUE)
x <- read.csv(args[1])
levels <- as.numeric(strsplit(args[2], ",")[[1]])
suppressMessages(library(psych))
icc <- ICC(x, lmer = FALSE)$results["Single_random_raters", ]
out <- data.frame(statistic = "icc2", estimate = icc$ICC, ci_low = icc$`lower bound`, ci_high = icc$`upper bound`)
if (ncol(x) == 2) {
  k <- cohen.kappa(x, levels = levels)
  tab <- table(factor(x[[1]], levels = levels), factor(x[[2]], levels = levels))
  n <- sum(tab); p <- tab / n; m <- length(levels)
  w <- 1 - outer(seq_len(m), seq_len(m), function(i, j) (i - j)^2) / (m - 1)^2
  rs <- rowSums(p); cs <- colSums(p)
  po <- sum(w * p); pc <- sum(w * outer(rs, cs))
  wi <- as.vector(w %*% cs); wj <- as.vector(t(w) %*% rs)
  v <- (sum(p * (w * (1 - pc) - outer(wi, wj, "+") * (1 - po))^2) - (po * pc - 2 * pc + po)^2) / (n * (1 - pc)^4)
  kw <- (po - pc) / (1 - pc)
  stopifnot(abs(kw - k$weighted.kappa) < 1e-12)  # the same estimate as psych
  z <- qnorm(0.975)
  out <- rbind(out, data.frame(statistic = "kappa_w", estimate = kw, ci_low = max(-1, kw - z * sqrt(v)),
                               ci_high = min(1, kw + z * sqrt(v))))
}
write.csv(out, args[3], row.names = FALSE)
