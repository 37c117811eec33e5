module goleak

go 1.19
