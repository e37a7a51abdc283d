def test_request_redis_counts(make_app):
    app = make_app({"/": lambda request: request.redis.incr("hits")})
    assert app.get("/").text == "1"
    assert app.get("/").text == "2"
