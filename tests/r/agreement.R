# The references of skintrack.analysis.agreement: cor.test (Pearson, Fisher z interval), Spearman's rho with
# the Bonett & Wright (2000) interval written out, epiR::epi.ccc (Lin's concordance, z-transform interval;
# Bland-Altman bias and 1.96 SD limits), t.test for the bias interval and the Bland & Altman (1999) limits'
# intervals written out. Usage: Rscript agreement.R in.csv out.csv (columns x, y).
suppressMessages(library(epiR))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
x <- d$x; y <- d$y; n <- length(x)
z <- qnorm(0.975)
p <- cor.test(x, y, method = "pearson")
rho <- cor(x, y, method = "spearman")
se <- sqrt((1 + rho^2 / 2) / (n - 3))
ccc <- epi.ccc(x, y, ci = "z-transform", conf.level = 0.95)
# epi.ccc's Bland-Altman is x - y with limits at qnorm(0.975) SDs
bias <- ccc$sblalt$est; s <- ccc$sblalt$delta.sd
tt <- t.test(x - y)
half <- qt(0.975, n - 1) * s * sqrt(1 / n + z^2 / (2 * (n - 1)))
out <- data.frame(
  statistic = c("pearson", "spearman", "lin_ccc", "bias", "loa_low", "loa_high"),
  estimate = c(unname(p$estimate), rho, ccc$rho.c$est, bias, ccc$sblalt$lower, ccc$sblalt$upper),
  ci_low = c(p$conf.int[1], tanh(atanh(rho) - z * se), ccc$rho.c$lower, tt$conf.int[1],
             ccc$sblalt$lower - half, ccc$sblalt$upper - half),
  ci_high = c(p$conf.int[2], tanh(atanh(rho) + z * se), ccc$rho.c$upper, tt$conf.int[2],
              ccc$sblalt$lower + half, ccc$sblalt$upper + half))
write.csv(out, args[2], row.names = FALSE)
